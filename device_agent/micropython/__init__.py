# The MicroPython agent (umqtt.simple adapter around the protocol core): see agent.py.
