from sentiment_api.cli.commands import main

main()
