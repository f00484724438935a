"""`python -m dialer.sandbox`: the `simulate` command on its own (spawn_process runs this)."""

from dialer.sandbox.command import simulate

if __name__ == "__main__":
    simulate(prog_name="python -m dialer.sandbox")
