from nightlink.cli import main

main()
