"""`python -m dialer`: the same as the `dialer` command."""

from dialer.cli import main

main()
