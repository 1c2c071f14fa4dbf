# The production image: one image, three roles (web, worker, beat) chosen by the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 GZ_ENV=production
RUN apt-get update && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml scripts/bootstrap.py ./
RUN python -c "import tomllib,subprocess,sys; d=tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']; subprocess.run([sys.executable,'-m','pip','install','--no-cache-dir',*d],check=True)"
COPY . .
RUN SECRET_KEY=build DATABASE_URL=postgres://x@localhost/x REDIS_URL=redis://localhost ALLOWED_HOSTS=x \
    CONSOLE_URL=https://x python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "gz_console.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
