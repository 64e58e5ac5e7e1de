"""The code that runs on a device: `runner.py`, its helpers (`runner_facts.py`) and one adapter
per runtime (`rt_<runtime>.py`). These files import only the standard library, numpy and their
runtime, and are staged together into one directory on a device, under these names."""
