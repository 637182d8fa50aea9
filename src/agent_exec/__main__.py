"""``python -m agent_exec``: the CLI."""

from agent_exec._cli import main

if __name__ == "__main__":
    main()
