# Copy to diams_config.py on the board and fill in (the values come from `diams-agent provision`).
WIFI_SSID = "my-ssid"
WIFI_PASSWORD = "my-password"  # noqa: S105
DEVICE_ID = "0000000000000000"         # 16 hex digits
SECRET_FILE = "diams.key"  # noqa: S105  # S as 64 hex digits, copied from <id>.key
FIRMWARE_HASH = "00" * 32              # SHA-256 of the firmware image, hex
EPOCH = 0
GATEWAYS = ["gw-1"]                    # failover order
BROKER_HOST = "192.168.1.10"
BROKER_PORT = 1883
STATE_FILE = "diams.state"             # write-ahead counters
INTERVAL_S = 30
