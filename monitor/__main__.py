from monitor.cli.main import run

run()
