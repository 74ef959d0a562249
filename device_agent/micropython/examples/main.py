# mypy: ignore-errors
# main.py: run the DIAMS agent: authenticate with the configured gateways, publish a reading every
# INTERVAL_S seconds, obey commands. Everything device-specific is in diams_config.py (see
# diams_config_example.py); the secret file is written once at provisioning (see docs/AGENT.md).
import diams_config as cfg
import machine

from device_agent.micropython.agent import Agent


def read_secret(path):
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def on_command(name, payload):
    print("command", name, len(payload))
    if name == "reboot":
        machine.reset()


def read():
    # Replace with a real sensor; the MCU temperature sensor where the port has one.
    try:
        import esp32
        return b'{"t":%d}' % esp32.mcu_temperature()
    except (ImportError, AttributeError):
        return b'{"up":1}'


agent = Agent(bytes.fromhex(cfg.DEVICE_ID), read_secret(cfg.SECRET_FILE), bytes.fromhex(cfg.FIRMWARE_HASH),
              cfg.GATEWAYS, cfg.BROKER_HOST, cfg.BROKER_PORT, epoch=cfg.EPOCH, state_path=cfg.STATE_FILE,
              on_command=on_command)
agent.run(read, stream="telemetry", interval_s=cfg.INTERVAL_S)
