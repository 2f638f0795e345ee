from migbench.cli import main

main()
