"""The local archive target: date folders of JSON records and MP3s (`target`, `files`), and
the HTML pages over them (`site`, with their data in `pages`, their words in `text`, and their
templates in `templates/`)."""
