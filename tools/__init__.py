"""Tools for running the layer locally, outside the test suite.

``tools.emulator``   our own stand-in for one Lambda execution environment (freeze/thaw, deadlines,
                     fault injection: what AWS's emulator cannot do)
``tools.rie``        AWS's Runtime Interface Emulator (the code ``sam local`` runs), without Docker
``tools.demo``       ``./build.sh demo``
``tools.local_invoke``  ``./build.sh local-invoke``: a user's own function with the layer on RIE
``tools.moto_server``   moto in server mode, the local stand-in for AWS
``tools.layer``         where the built layer is (one function)
``tools.net``, ``tools.cli``   loopback ports and HTTP helpers; shared command-line pieces
"""
