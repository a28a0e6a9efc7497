"""The remote-request engine every HTTP provider runs on: packing, pacing, rate limits, retries."""
