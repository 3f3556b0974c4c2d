"""Config models, record layouts and Arrow schemas shared by every stage."""
