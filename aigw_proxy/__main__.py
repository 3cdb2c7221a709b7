from aigw_proxy.cli import main

main()
