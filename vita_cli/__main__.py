from vita_cli.main import app

app()
