try:
    from migbench.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the CLI: nothing has started yet
    raise SystemExit(130) from None

main()
