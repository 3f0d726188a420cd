from qkanforecast.cli import main

main()
