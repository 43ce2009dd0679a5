"""``modelrun``: the command-line client for a modelrun stack, local or deployed."""
