pytest_plugins = ["tests.fixtures.halfstack", "tests.fixtures.images", "tests.fixtures.registry"]
