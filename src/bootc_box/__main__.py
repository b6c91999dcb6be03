from bootc_box.cli import main

main()
