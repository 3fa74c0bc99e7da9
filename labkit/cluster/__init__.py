"""A cluster on one machine: one Docker container per node (docker compose), or one network namespace
per node without Docker, with links slowed down by ``tc`` so the alpha-beta model can be checked.

``compose`` writes the compose file, ``node`` is each container's first step, ``shaping`` turns
"100mbit" into tc commands, ``netns`` builds namespace nodes, ``image`` builds the node image,
``docker`` and ``follow`` run and watch the cluster, ``cli`` is ``labkit cluster``.
"""
