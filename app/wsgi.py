"""WSGI entry point for gunicorn: `gunicorn -c infra/gunicorn.conf.py app.wsgi:app`."""

from app.factory import create_app

app = create_app()
