"""Virtual folders: who reaches which folder (access), the storage proxies that hold them
(proxies), and the /folders operations (folders, files)."""
