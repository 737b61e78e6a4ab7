"""The tests' own mosquitto keeps its subscribers' sessions across a restart: the fault tests
count on it (a subscriber that reconnects after the gateway's replay must still get it)."""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest

from tests.fixtures_mqtt import Mosquitto, MqttCollector

pytestmark = pytest.mark.integration


def test_a_persistent_subscriber_gets_what_was_published_while_the_broker_restarted(
        fresh_mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port, "t/#",
                               persistent=True)
    fresh_mosquitto.stop()
    fresh_mosquitto.start()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-publisher")
    publisher.connect(fresh_mosquitto.host, fresh_mosquitto.port)
    publisher.loop_start()
    try:
        for n in range(10):  # most likely before the collector is back (it retries each 1 s)
            publisher.publish("t/n", str(n), qos=1).wait_for_publish(10)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    collector.wait_subscribed()
    got = collector.wait_for(lambda messages: len(messages) >= 10, 15, "the queued messages")
    assert [m.payload for m in got] == list(range(10))
    assert "Error saving" not in fresh_mosquitto.service.log()
