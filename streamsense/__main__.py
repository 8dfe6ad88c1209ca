from streamsense.cli import app

app()
