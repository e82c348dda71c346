"""The ``banditroute`` command line (:mod:`.main`) and the tables it prints (:mod:`.report`)."""
