from tts_actor.cli import main

raise SystemExit(main())
