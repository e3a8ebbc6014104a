"""The Edge TPU runtime versions lastlayer's compatibility check knows, in a module light enough for the CLI's parser."""

OLDEST_RUNTIME = 10
LATEST_RUNTIME = 16
