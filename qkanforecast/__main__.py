from qkanforecast.cli import app

app(prog_name="qkanforecast")
