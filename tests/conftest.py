"""Suite-wide pytest settings shared by every layer of the test pyramid."""
