#!/bin/sh
# A job that uses its secrets, and then carelessly prints them: envrun masks every secret
# value (and its base64, hex, URL and JSON forms) in what the command writes.
echo "LOG_LEVEL=$LOG_LEVEL"
echo "DB_USER has ${#DB_USER} characters, DB_PASSWORD has ${#DB_PASSWORD}"
echo "API_TOKEN=$API_TOKEN"
echo "DATABASE_URL=$DATABASE_URL"
echo "token in base64: $(printf %s "$API_TOKEN" | base64)"
echo "WEBHOOK_SECRET=$WEBHOOK_SECRET"
