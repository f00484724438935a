"""`python -m dialer`: the same as the `dialer` command."""

from dialer.entry import main

main()
