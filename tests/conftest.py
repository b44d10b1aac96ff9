pytest_plugins = ["tests.fixtures.halfstack", "tests.fixtures.images"]
