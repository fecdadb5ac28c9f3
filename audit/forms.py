"""The analytics pages' filters, read from the query string (the page, its CSV links and the chart
links all carry the same ones): a preset or custom range, hour or day buckets, person, team (its
slug), model."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.http import urlencode

from audit.analytics import DAY, HOUR, Window

PRESETS = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
    "90d": ("Last 90 days", timedelta(days=90)),
}
CUSTOM = "custom"
DEFAULT_RANGE = "7d"
MAX_DAYS = 366
MAX_HOURLY_DAYS = 31  # 744 hourly buckets: more would not fit a chart's width


class UsageFilters(forms.Form):
    range = forms.ChoiceField(
        choices=[(key, label) for key, (label, _) in PRESETS.items()] + [(CUSTOM, "Custom…")], required=False
    )
    start = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    group = forms.ChoiceField(label="Group by", choices=[("", "Auto"), (HOUR, "Hour"), (DAY, "Day")], required=False)
    person = forms.CharField(label="Person", max_length=150, required=False)
    team = forms.SlugField(label="Team", max_length=50, required=False)
    model = forms.ChoiceField(label="Model", required=False)

    def __init__(self, data=None, **kwargs):
        if data is not None and not data.get("range"):
            # Spelled out, so the range picker shows the range the figures are for.
            data = data.copy()
            data["range"] = CUSTOM if data.get("start") or data.get("end") else DEFAULT_RANGE
        super().__init__(data, **kwargs)
        chosen = (data or {}).get("model", "")
        models = list(settings.PORTAL_MODELS) + ([chosen] if chosen and chosen not in settings.PORTAL_MODELS else [])
        self.fields["model"].choices = [("", "All models")] + [(name, name) for name in models]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        now = timezone.now()
        chosen = data["range"]
        if chosen == CUSTOM:
            start, end = data.get("start"), data.get("end")
            if not start or not end:
                raise forms.ValidationError("A custom range needs both a From and a To date.")
            if start > end:
                raise forms.ValidationError("The From date comes after the To date.")
            if (end - start).days + 1 > MAX_DAYS:
                raise forms.ValidationError(f"A custom range covers at most {MAX_DAYS} days.")
            days = (end - start).days + 1
        else:
            days = PRESETS[chosen][1] / timedelta(days=1)
        group = data.get("group") or (HOUR if days <= 2 else DAY)
        if group == HOUR and days > MAX_HOURLY_DAYS:
            raise forms.ValidationError(
                f"Group by hour covers at most {MAX_HOURLY_DAYS} days: choose Day or a shorter range."
            )
        data["window"] = (
            Window.days(data["start"], data["end"], group) if chosen == CUSTOM else Window.last(PRESETS[chosen][1], group, now)
        )
        return data

    @property
    def window(self) -> Window:
        return self.cleaned_data["window"]

    def query(self, **changes) -> str:
        """The filters as a query string, with `changes` (None drops a filter): for links."""
        values = {name: self.data.get(name, "") for name in self.fields}
        values.update(changes)
        return urlencode({name: value for name, value in values.items() if value})
