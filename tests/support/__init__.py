"""Support shared by the tests: config builder, app and pilot helpers, anvil launcher, oracle."""
