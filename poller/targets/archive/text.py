"""The words and date formats of the archive pages, in each `target.archive.locale`.

Kept in code rather than in gettext catalogues: two languages and a few dozen phrases, and
Python's own month names follow the process locale, not the page's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")
_EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_RU_MONTHS = ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август",
              "сентябрь", "октябрь", "ноябрь", "декабрь")
# "26 ноября": the day of a month takes the genitive
_RU_MONTHS_OF = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
                 "сентября", "октября", "ноября", "декабря")
_RU_WEEKDAYS = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота",
                "воскресенье")
_RU_WEEKDAYS_SHORT = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")

STRINGS: dict[str, dict[str, Any]] = {
    "en": {
        "archive": "Calls",
        "skip": "Skip to the calls",
        "all_days": "All days",
        "updated": "Updated",
        "times_in": "Times in",
        # the command line's words (`poller run --dry-run`, the records' status field)
        "statuses": {"answered": "answered", "unanswered": "unanswered", "busy": "busy",
                     "impossible": "impossible"},
        "problems": {"missing": "recording missing", "empty": "empty recording",
                     "unreadable": "recording unreadable", "refused_path": "recording refused"},
        "status": "Status",
        "all": "all",
        "search": "Number or name",
        "search_hint": "e.g. 916 123",
        "shown": "{shown} of {total} calls shown",
        "no_match": "No call matches.",
        "pages": "Pages of calls",
        "earlier": "← Earlier",
        "later": "Later →",
        "window": "calls {first}–{last} of {count}",
        "more_with_js": "The first {shown} of {total} calls; the others are shown with "
                        "JavaScript (each call's record is a JSON file in this folder).",
        "no_calls": "No calls.",
        "calls": "calls",
        "col_time": "Time",
        "col_number": "Caller",
        "col_status": "Status",
        "col_duration": "Duration",
        "col_talk": "Talk",
        "col_answered_by": "Answered by",
        "col_pbx": "PBX",
        "unnamed_pbx": "(unnamed)",
        "col_recording": "Recording",
        "col_record": "Record",
        "col_day": "Day",
        "col_total": "Calls",
        "col_last_missed": "Last missed",
        "col_attempts": "Missed calls",
        "col_done": "Called back",
        "play": "Play",
        "play_label": "Play the recording of the call at {time} from {number}",
        "download": "MP3",
        "record": "JSON",
        "incident": "incident",
        "incident_opened": "opened an incident",
        "incident_of": "in the incident of the {when} call",
        "incident_joined": "in an incident",
        "anonymous": "no number",
        "sorted_up": "sorted by {column}, ascending",
        "sorted_down": "sorted by {column}, descending",
        "to_call_back": "To call back",
        "to_call_back_note": ("Callers of the last {days} days whose missed call nobody has "
                              "answered since (a later answered call from the same number "
                              "clears them). Tick those called back from elsewhere: the tick "
                              "is kept in this browser only."),
        "more": "and {count} more",
        "none_to_call_back": "Nobody is waiting for a call back.",
        "mark_done": "Called back",
        "empty_archive": "The archive holds no calls yet.",
        "other": "other",
    },
    "ru": {
        "archive": "Звонки",
        "skip": "Перейти к звонкам",
        "all_days": "Все дни",
        "updated": "Обновлено",
        "times_in": "Время:",
        # the command line's statuses, translated
        "statuses": {"answered": "отвечен", "unanswered": "без ответа", "busy": "занято",
                     "impossible": "не прошёл"},
        "problems": {"missing": "нет записи", "empty": "пустая запись",
                     "unreadable": "запись не читается", "refused_path": "запись отклонена"},
        "status": "Статус",
        "all": "все",
        "search": "Номер или имя",
        "search_hint": "напр. 916 123",
        "shown": "показано {shown} из {total}",
        "no_match": "Нет подходящих звонков.",
        "pages": "Страницы звонков",
        "earlier": "← Раньше",
        "later": "Позже →",
        "window": "звонки {first}–{last} из {count}",
        "more_with_js": "Первые {shown} из {total} звонков; остальные показываются с "
                        "JavaScript (запись каждого звонка — JSON-файл в этой папке).",
        "no_calls": "Звонков нет.",
        "calls": "звонков",
        "col_time": "Время",
        "col_number": "Кто звонил",
        "col_status": "Статус",
        "col_duration": "Длительность",
        "col_talk": "Разговор",
        "col_answered_by": "Ответил",
        "col_pbx": "АТС",
        "unnamed_pbx": "(без имени)",
        "col_recording": "Запись",
        "col_record": "Данные",
        "col_day": "День",
        "col_total": "Звонков",
        "col_last_missed": "Последний пропущенный",
        "col_attempts": "Пропущено",
        "col_done": "Перезвонили",
        "play": "Слушать",
        "play_label": "Слушать запись звонка в {time} с номера {number}",
        "download": "MP3",
        "record": "JSON",
        "incident": "инцидент",
        "incident_opened": "открыл инцидент",
        "incident_of": "в инциденте звонка {when}",
        "incident_joined": "в инциденте",
        "anonymous": "без номера",
        "sorted_up": "сортировка: {column}, по возрастанию",
        "sorted_down": "сортировка: {column}, по убыванию",
        "to_call_back": "Перезвонить",
        "to_call_back_note": ("Звонившие за последние {days} дней, чей пропущенный звонок с тех "
                              "пор никто не принял (принятый позже звонок с того же номера "
                              "убирает их). Отметьте тех, кому перезвонили с другого телефона: "
                              "отметка хранится только в этом браузере."),
        "more": "и ещё {count}",
        "none_to_call_back": "Перезванивать никому не нужно.",
        "mark_done": "Перезвонили",
        "empty_archive": "В архиве пока нет звонков.",
        "other": "прочие",
    },
}


def long_date(day: dt.date, locale: str) -> str:
    """`Thursday, 26 November 2026` / `четверг, 26 ноября 2026`."""
    if locale == "ru":
        return f"{_RU_WEEKDAYS[day.weekday()]}, {day.day} {_RU_MONTHS_OF[day.month - 1]} {day.year}"
    return f"{_EN_WEEKDAYS[day.weekday()]}, {day.day} {_EN_MONTHS[day.month - 1]} {day.year}"


def short_date(day: dt.date, locale: str) -> str:
    """`Thu 26 Nov` / `чт 26.11`, for tables where the month heading says the rest."""
    if locale == "ru":
        return f"{_RU_WEEKDAYS_SHORT[day.weekday()]} {day:%d.%m}"
    return f"{_EN_WEEKDAYS[day.weekday()][:3]} {day.day} {_EN_MONTHS[day.month - 1][:3]}"


def month_title(year: int, month: int, locale: str) -> str:
    """`November 2026` / `Ноябрь 2026`."""
    names = _RU_MONTHS if locale == "ru" else _EN_MONTHS
    return f"{names[month - 1].capitalize()} {year}"


def clock(seconds: int) -> str:
    """`0:42`, `12:05`, `1:02:03`: a duration as people read it off a phone."""
    hours, rest = divmod(max(int(seconds), 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
