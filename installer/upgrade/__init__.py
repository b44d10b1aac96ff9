"""bai-install upgrade and rollback: release manifest, path rules, backup, the upgrade playbook."""
