"""The main screen's panels; each renders from `console.data.ConsoleData`."""
