# mypy: ignore-errors
# boot.py: join Wi-Fi before main.py runs (ESP32 / Pico W). Credentials come from diams_config.py.
import time

import diams_config as cfg
import network

wlan = network.WLAN(network.STA_IF)
wlan.active(True)
if not wlan.isconnected():
    wlan.connect(cfg.WIFI_SSID, cfg.WIFI_PASSWORD)
    for _ in range(100):  # 20 s
        if wlan.isconnected():
            break
        time.sleep_ms(200)
print("wifi:", wlan.ifconfig() if wlan.isconnected() else "not connected")
