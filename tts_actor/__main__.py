from tts_actor.cli.main import main

raise SystemExit(main())
