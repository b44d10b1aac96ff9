"""bai webserver: browser logins backed by Redis sessions, the signed ``/func/`` proxy to the
manager, ``/pipe/`` websockets, and the web UI's static files."""
