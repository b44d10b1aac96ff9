"""Cloud provisioning for bai with Pulumi (AWS): a VPC, security groups, management and GPU
agent hosts, managed or self-hosted PostgreSQL/Redis/storage, a load balancer, and the
inventory ``bai-install install --from-stack`` reads.

Modules: config (validated ``bai:*`` keys), network, security, services, hosts, userdata, ha
(the load balancer), inventory, install (optional remote bai-install), program (``build`` and
``main``). Needs the ``stack`` extra (``pip install -e .[stack]``); pulumi_aws is imported only
here, never by the installer.
"""
