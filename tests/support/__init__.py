"""What the tests share: helpers, stand-ins, the fake hub."""
