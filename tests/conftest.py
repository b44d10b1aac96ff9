pytest_plugins = ["tests.fixtures.halfstack"]
