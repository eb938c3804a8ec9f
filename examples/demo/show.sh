#!/bin/sh
# What a job does with its secrets: use them, never print them.
echo "LOG_LEVEL=$LOG_LEVEL"
echo "GREETING=$GREETING"
echo "DB_USER is set (${#DB_USER} characters)"
echo "API_TOKEN is set (${#API_TOKEN} characters)"
echo "DB_PASSWORD is set (${#DB_PASSWORD} characters)"
echo "DATABASE_URL is set (${#DATABASE_URL} characters)"
