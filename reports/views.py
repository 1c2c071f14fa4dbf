from django.shortcuts import render

from companies.views import PageView


class ReportIndexView(PageView):
    page_key = "reports"

    def get(self, request):
        return render(request, "reports/index.html", {"company": request.user.company})
