"""The fleet simulator: many devices in one process, each with its own identity and the real core.

``device`` one simulated device (``SimDevice``); ``fleet`` pacing, backoff, live counters, the
verified-data observer and what a scenario may reach (``SiteAccess``); ``scenarios`` the named
scenarios and their checks; ``report`` percentiles, JSON and the SVG histogram; ``identities``
enrolled identities on disk; ``broker`` a private Mosquitto; ``cli`` ``diams-sim``; ``demo`` ``make demo``.
See docs/SIMULATOR.md.
"""
