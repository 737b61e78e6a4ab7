"""Sparkplug B edge node sink (`type: sparkplug`): `sink.SparkplugSink` with its settings
`config.SparkplugSinkConfig`; the pure parts are `payload` (protobuf payloads) and `session`
(bdSeq, seq, aliases, births and deaths). See docs/sparkplug.md."""
