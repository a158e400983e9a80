"""The running service: the only place Faust, aiokafka and aiohttp appear."""
