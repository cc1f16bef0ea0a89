"""The `lfspass` command: argument parsing in `main`, one thin module per sub-command.

Imports anything in the package; nothing imports it.
"""
