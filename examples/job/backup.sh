#!/bin/sh
# The job itself knows nothing about envrun: it reads its configuration from the environment.
set -eu
: "${PGPASSWORD:?}" "${S3_SECRET_KEY:?}"
pg_dump --host db.internal --username "$PGUSER" app | gzip > /tmp/app.sql.gz
aws s3 cp /tmp/app.sql.gz "$BACKUP_BUCKET/app-$(date +%F).sql.gz"
