from nightlink.cli import main

main(prog_name="nightlink")
