from sweeps.cli.commands import main

main()
