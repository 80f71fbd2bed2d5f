from memdump.cli import main

main()
