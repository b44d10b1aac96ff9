"""Thin handlers: /server/* (login), /func/* and /pipe/* (the signed relay), the UI's files."""
